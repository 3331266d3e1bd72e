"""forklift deploy: immutable releases, checked before traffic, rolled back by themselves.

`forklift deploy|releases|rollback|systemd-unit` (see `cli.py` and docs/deploy.md). The
modules, one room each:

  releases.py  the app directory on disk: releases/, venvs/, shared/, current, history, lock,
               pruning
  source.py    fetch a ref from git and export one commit into a release directory
  venvs.py     the venv of a release: dependency files, their hash, build or reuse
  steps.py     what each step does: preflight, release command, watch verdict, nginx
  pipeline.py  the order of the steps, undoing them on failure, recording the deploy
  report.py    the remembered settings, and the step lines (or JSON objects) printed
  push.py      `--init-push`: a bare repository whose hook deploys what is pushed
  systemd.py   the unit file of the master
"""
