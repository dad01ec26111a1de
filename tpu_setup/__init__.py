"""Create, install, launch on and babysit Cloud TPU VMs and pod slices for bonjax runs.

Scripts (each takes ``--dry-run`` to print the exact commands instead of running them)::

    python -m tpu_setup.create   --name NAME --zone ZONE --accelerator-type v5litepod-16
    python -m tpu_setup.install  --name NAME --zone ZONE
    python -m tpu_setup.launch   --name NAME --zone ZONE -- python -m experiments.train ...
    python -m tpu_setup.babysit  --name NAME --zone ZONE --accelerator-type v5p-32 \\
        --run-dir gs://BUCKET/RUN -- python -m experiments.train ...

See ``tpu_setup/README.md``.
"""
