"""The `slurm-bridge` program: the composition root.

`cli.py` parses the command line and loads the config; `app.py` builds the chosen components from the
config (clients, caches, reconcilers, work queues) and runs them; `routing.py` turns watch events and
Slurm changes into work-queue keys; `clients.py` builds the Slurm clients; `health.py` says whether
the process is alive and ready. Nothing below this package imports it.
"""
