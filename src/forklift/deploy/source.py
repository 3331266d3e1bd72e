"""Fetch a ref from the app's git repository and export one commit into a release directory.

Each app directory keeps a bare copy of the repository (`cache.git`), fetched before every
deploy; a release is `git archive` of one commit: no `.git`, nothing a later pull could change.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from .releases import DeployError

_GIT_TIMEOUT = 300.0


def git_env() -> dict:
    """The environment without GIT_*: a push hook runs with GIT_DIR set to the pushed repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"  # a deploy never waits for a password prompt
    env.setdefault("LC_ALL", "C")
    return env


def git(*args: str, git_dir: Path | None = None, check: bool = True) -> str:
    cmd = ["git"]
    if git_dir is not None:
        cmd.append(f"--git-dir={git_dir}")
    cmd += list(args)
    try:
        proc = subprocess.run(
            cmd,
            env=git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
        )
    except FileNotFoundError:
        raise DeployError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"git {args[0]} did not finish within {_GIT_TIMEOUT:.0f} s") from None
    if check and proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise DeployError(f"git {args[0]}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout.strip() if proc.returncode == 0 else ""


class GitSource:
    """`repo` (a URL or a path) seen through the bare cache `cache`."""

    def __init__(self, repo: str, cache: Path):
        self.repo = repo
        self.cache = cache

    def fetch(self) -> None:
        if not (self.cache / "HEAD").exists():
            git("init", "--quiet", "--bare", str(self.cache))
        git(
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "--no-tags",
            self.repo,
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
            git_dir=self.cache,
        )

    def default_branch(self) -> str:
        """The branch the remote's HEAD names (what `git clone` would check out)."""
        out = git("ls-remote", "--symref", self.repo, "HEAD", git_dir=self.cache)
        for line in out.splitlines():
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                return line[5:-5].removeprefix("refs/heads/")
        raise DeployError(f"{self.repo}: no default branch (empty repository?); give --ref")

    def resolve(self, ref: str) -> str:
        """A branch, a tag or a commit id of the remote -> the full commit id."""
        for candidate in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
            sha = git(
                "rev-parse",
                "--verify",
                "--quiet",
                f"{candidate}^{{commit}}",
                git_dir=self.cache,
                check=False,
            )
            if sha:
                return sha
        raise DeployError(f"{self.repo}: no branch, tag or commit named {ref!r}")

    def subject(self, sha: str) -> str:
        return git("log", "-1", "--format=%s", sha, git_dir=self.cache, check=False)

    def export(self, sha: str, dest: Path) -> int:
        """Write the commit's tree into `dest` (which must not exist); return the file count."""
        dest.mkdir()
        proc = subprocess.Popen(
            ["git", f"--git-dir={self.cache}", "archive", "--format=tar", sha],
            env=git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        count = 0
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    # the 'data' filter refuses absolute paths, `..` and links leaving the tree
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, dest, filter="data")
                    else:  # Python < 3.11.4: check the two ways out by hand
                        _check_member(member)
                        tar.extract(member, dest)
                    count += member.isfile()
        except (tarfile.TarError, OSError) as exc:
            proc.kill()
            raise DeployError(f"git archive {sha[:7]}: {exc}") from None
        finally:
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            proc.wait()
        if proc.returncode != 0:
            raise DeployError(f"git archive {sha[:7]}: {err or f'exit {proc.returncode}'}")
        return count


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts:
        raise tarfile.TarError(f"refusing {name!r}: outside the release")
    if member.issym() and (member.linkname.startswith("/") or ".." in Path(member.linkname).parts):
        raise tarfile.TarError(f"refusing link {name!r} -> {member.linkname!r}")
