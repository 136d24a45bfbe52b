"""The names hpsearch stores on Optuna studies and trials, in one place that imports nothing.

Every part that writes or reads one of these (a trial's records, retries, the report, the dashboard, export) uses
the constant, so a key cannot drift between a writer and a reader.
"""

from __future__ import annotations

# Trial user attributes
CONFIG = "config"  # the whole TrialConfig, as studies made before the compact attributes stored it on each trial
EPOCHS = "epochs"  # the trial's planned epochs (its train.epochs); its config is rebuilt from the study's space
CHECKPOINT = "checkpoint"  # artifact id of the trial's best-epoch checkpoint in the study's artifact store
CHECKPOINT_ERROR = "checkpoint_error"  # why the checkpoint could not be stored (the result stands)
WORKER = "worker"  # host:pid of the process that ran the trial
RUN = "run"  # the id of the `hpsearch run` command that started the trial: its summary counts those
FAIL_REASON = "fail_reason"  # why a failed trial failed, in words
EPOCHS_RUN = "epochs_run"  # epochs reported, resumed ones included
BEST_EPOCH = "best_epoch"  # 1-based epoch whose metric is the trial's value
EPOCHS_TRAINED = "epochs_trained"  # epochs trained by this run (fewer than epochs_run for a resumed trial)
EPOCH_SECONDS = "epoch_seconds"  # seconds in epochs (training and validation)
RETRY_OF = "retry_of"  # a retry: the number of the trial it reruns
RETRY_REASON = "retry_reason"  # a retry: why that trial was cut short
RESUMED_FROM = "resumed_from"  # a retry that resumed: the trial whose running checkpoint it loaded
RESUMED_EPOCH = "resumed_epoch"  # ... and the epochs that checkpoint had finished
RESUME_ERROR = "resume_error"  # a running checkpoint that could not be used, and why
RUNNING_CHECKPOINT_ERROR = "running_checkpoint_error"  # a running state that could not be written
FUSED = "fused"  # a trial trained in a fused group (--fuse): the group's size when it started
FUSE_LEADER = "fuse_leader"  # ... and the number of the group's first trial (the same for all its members)
PRECISION = "precision"  # what the trial trains in (bf16, fp16, fp32): its train.precision resolved on its device

# Study user attributes
SPACE = "space"  # the space's identity (its trial sections, metric, direction): the resume guard compares it,
# and with a trial's parameters it rebuilds that trial's TrialConfig (studies.trial_config)
SPACE_HASH = "space_hash"  # a digest of SPACE
SPACE_FILE = "space_file"  # the file the study was made from
DATA = "data_identity"  # where the data set's root is its data (an image folder): its class folders and image count
# per class of each split, a listing (training.rawdata.data_identity); the resume guard compares it. Other data sets
# store none: their root is only where they sit. Studies made before it have none and resume unchecked.
