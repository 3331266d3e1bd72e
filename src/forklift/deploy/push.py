"""Push-to-deploy: `DIR/repo.git`, a bare repository whose post-receive hook deploys.

`git push server:DIR/repo.git main` updates the branch, then git runs the hook with the
pusher still connected: whatever the hook prints reaches the pusher's terminal as
`remote: ...` lines, so the deploy's steps stream to whoever pushed.
"""

from __future__ import annotations

import os
import shlex
import sys

from .releases import AppDir
from .source import git

HOOK = """\
#!/bin/sh
# Written by `forklift deploy --init-push`: a push to {branch} deploys the pushed commit and
# streams the steps to the pusher. Options are remembered in {settings}.
# A post-receive hook runs with GIT_DIR set: the deploy's own git commands must not see it.
unset GIT_DIR GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
status=0
while read old new ref; do
    [ "$ref" = {ref} ] || continue
    case "$new" in *[!0]*) ;; *) continue ;; esac  # all zeros: the branch was deleted
    PYTHONUNBUFFERED=1 {python} -m forklift.deploy deploy --app {app} --repo {repo} \\
        --ref "$new" || status=$?
done
exit $status
"""


def init_push(app: AppDir, branch: str) -> str:
    """Create (or update the hook of) DIR/repo.git; return what to tell the user."""
    app.ensure_layout()
    repo = app.push_repo
    created = not (repo / "HEAD").exists()
    if created:
        git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(repo))
    hook = repo / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    text = HOOK.format(
        branch=branch,
        ref=shlex.quote(f"refs/heads/{branch}"),
        settings=app.settings_path,
        python=shlex.quote(sys.executable),
        app=shlex.quote(str(app.root)),
        repo=shlex.quote(str(repo)),
    )
    tmp = hook.with_name(f".post-receive.{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, hook)
    return (
        f"{'created' if created else 'updated'} {repo} (hook: hooks/post-receive); "
        f"deploy with: git push <server>:{repo} {branch}"
    )
