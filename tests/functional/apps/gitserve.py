"""A git smart-HTTP server: dulwich's WSGI app over the bare repository in $GIT_REPO.

Real git clients talk to it (clone, fetch, push with a chunked request body), so it checks
framing, keep-alive and large bodies the way a real client does, not the way a test thinks.
"""

import os

from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

app = make_wsgi_chain(DictBackend({"/": Repo(os.environ["GIT_REPO"])}))
