"""forklift deploy: immutable releases, checked before traffic, rolled back by themselves.

`forklift deploy|releases|rollback|systemd-unit`, `forklift deploy share` (see `cli.py` and
docs/deploy.md). The modules, one room each:

  releases.py  the app directory on disk: releases/, venvs/, shared/, current, history, lock,
               pruning
  source.py    fetch a ref from git and export one commit into a release directory
  venvs.py     the venv of a release: dependency files, their hash, build or reuse
  steps.py     what each step does: preflight, release command, watch verdict, nginx
  pipeline.py  the order of the steps, undoing them on failure, recording the deploy
  report.py    the remembered settings, and the step lines (or JSON objects) printed
  push.py      `--init-push`: a bare repository whose hook deploys what is pushed
  systemd.py   the unit file of the master
  strays.py    what the app wrote into its release (found before a switch); `deploy share`
  firststart.py  the first deploy with no server: how to start it (ini, unit, command line)
  inventory.py the hosts of a deploy to several machines (--hosts, TOML inventory)
  remote.py    one host over OpenSSH: the agent's connection, heartbeat, phases
  agent.py     `forklift deploy agent`: one host's pipeline, driven phase by phase over SSH
  fleet.py     the coordinator: lock, prepare, canary, batches, all or nothing
"""
