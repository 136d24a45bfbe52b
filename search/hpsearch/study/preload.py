"""The forkserver's first preload: garbage collection off while it imports torch and Optuna for the workers.

See study.runner.startup: each worker forked from the server turns collection on (and freezes what the server
imported) when its own start-up ends. (The server keeps the stop signals blocked: runner.prestart.) Imported for
this side effect only, by runner.PRELOAD.
"""

import gc

gc.disable()
