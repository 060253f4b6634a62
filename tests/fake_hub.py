"""An in-process stand-in for the Hugging Face Hub HTTP API, for offline push/download tests.

It answers the requests huggingface_hub 2.4 makes for `create_repo`, `create_commit` /
`upload_folder` / `push_to_hub` (regular, non-LFS uploads), `hf_hub_download` / `from_pretrained`,
`snapshot_download`, `model_info` and YAML validation, and stores committed files in memory. Dataset repositories
work too (`datasets`' `push_to_hub` and `load_dataset(repo_id)`, through `HfFileSystem`: `paths-info` and ranged
downloads); they are stored under the key `"datasets/<repo_id>"`. Parquet files go through the LFS "basic" upload
(batch endpoint, then a PUT), as on the Hub; the fake does not speak xet, so `installed()` turns it off.

    from tests.fake_hub import FakeHub

    with FakeHub().installed() as hub:      # every huggingface_hub request now goes to `hub`
        HfApi(token="hf_x").create_repo("me/model")
        ...
        hub.files("me/model")               # {path: bytes} of the latest commit
        hub.requests                        # [(method, path, authorization header)]
"""

import base64
import hashlib
import json
import re
from contextlib import contextmanager

import httpx2
import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.utils import _http

__all__ = ["FakeHub"]

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<kind>models|datasets)/" + _REPO
# `datasets.push_to_hub` pre-uploads its shards and then deletes them: they must take the LFS path.
_LFS_SUFFIXES = (".parquet",)


class FakeHub:
    """Model repositories in memory: `repos[repo_id] = {"private": bool, "commits": [(oid, {path: bytes})]}`."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.commit_messages: list[tuple[str, str]] = []
        self.lfs_objects: dict[str, bytes] = {}

    # -- state ---------------------------------------------------------------------------------
    def files(self, repo_id: str) -> dict[str, bytes]:
        commits = self.repos[repo_id]["commits"]
        return dict(commits[-1][1]) if commits else {}

    def commit_count(self, repo_id: str) -> int:
        return len(self.repos[repo_id]["commits"])

    def _head(self, repo_id: str) -> str:
        commits = self.repos[repo_id]["commits"]
        return commits[-1][0] if commits else "0" * 40

    # -- transport -----------------------------------------------------------------------------
    @contextmanager
    def installed(self):
        """Route huggingface_hub's HTTP client through this fake; restore the previous client after."""
        previous, previous_xet = _http._GLOBAL_CLIENT_FACTORY, constants.HF_HUB_DISABLE_XET
        constants.HF_HUB_DISABLE_XET = True
        huggingface_hub.set_client_factory(
            lambda: httpx2.Client(
                transport=httpx2.MockTransport(self),
                event_hooks={"request": [_http.hf_request_event_hook]},
                follow_redirects=True,
            )
        )
        try:
            yield self
        finally:
            huggingface_hub.set_client_factory(previous)
            constants.HF_HUB_DISABLE_XET = previous_xet

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append((request.method, path, request.headers.get("authorization")))
        host = f"{request.url.scheme}://{request.url.host}"
        routes = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", lambda req, host: httpx2.Response(200, json={"errors": [], "warnings": []})),
            ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"{_API}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"{_API}(?:/revision/(?P<rev>[^/]+))?", self._model_info),
            ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<folder>.+))?", self._tree),
            ("POST", rf"{_API}/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("POST", rf"/(?P<kind>datasets/)?{_REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/fake-lfs/(?P<oid>[0-9a-f]{64})", self._lfs_upload),
            ("HEAD", rf"/(?P<kind>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("GET", rf"/(?P<kind>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if request.method == method and match:
                arguments = match.groupdict()
                kind = arguments.pop("kind", None)
                if kind in ("datasets", "datasets/"):
                    arguments["repo"] = f"datasets/{arguments['repo']}"
                return handler(request, host, **arguments)
        return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": f"fake hub: no route for {request.method} {path}"})

    # -- handlers ------------------------------------------------------------------------------
    def _missing_repo(self, repo: str) -> httpx2.Response:
        return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": f"Repository {repo} not found"})

    def _create_repo(self, request, host):
        body = json.loads(request.content)
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if body.get("type") == "dataset":
            repo_id = f"datasets/{repo_id}"
        if repo_id in self.repos:
            return httpx2.Response(409, json={"error": "You already created this model repo", "url": f"{host}/{repo_id}"})
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.repos[repo_id] = {"private": private, "commits": []}
        return httpx2.Response(200, json={"url": f"{host}/{repo_id}", "name": repo_id, "id": repo_id})

    def _preupload(self, request, host, repo, rev):
        if repo not in self.repos:
            return self._missing_repo(repo)
        files = json.loads(request.content)["files"]
        modes = ["lfs" if f["path"].endswith(_LFS_SUFFIXES) else "regular" for f in files]
        return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": mode, "shouldIgnore": False}
                                                    for f, mode in zip(files, modes)]})

    def _lfs_batch(self, request, host, repo):
        if repo not in self.repos:
            return self._missing_repo(repo)
        objects = [{**item, "actions": {"upload": {"href": f"{host}/fake-lfs/{item['oid']}"}}}
                   for item in json.loads(request.content)["objects"] if item["oid"] not in self.lfs_objects]
        return httpx2.Response(200, json={"transfer": "basic", "objects": objects})

    def _lfs_upload(self, request, host, oid):
        if hashlib.sha256(request.content).hexdigest() != oid:
            return httpx2.Response(400, json={"error": "fake hub: content does not match its LFS oid"})
        self.lfs_objects[oid] = request.content
        return httpx2.Response(200)

    def _commit(self, request, host, repo, rev):
        if repo not in self.repos:
            return self._missing_repo(repo)
        files = self.files(repo)
        summary = ""
        for line in request.content.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"].get("summary", "")
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "lfsFile":
                files[item["value"]["path"]] = self.lfs_objects[item["value"]["oid"]]
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            else:
                return httpx2.Response(400, json={"error": f"fake hub: unsupported commit item {item['key']}"})
        oid = hashlib.sha1(json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in files.items())).encode() + str(len(self.repos[repo]["commits"])).encode()).hexdigest()
        self.repos[repo]["commits"].append((oid, files))
        self.commit_messages.append((repo, summary))
        return httpx2.Response(200, json={"commitUrl": f"{host}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def _model_info(self, request, host, repo, rev=None):
        if repo not in self.repos:
            return self._missing_repo(repo)
        siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(self.files(repo).items())]
        info = {"id": repo.removeprefix("datasets/"), "modelId": repo, "sha": self._head(repo),
                "private": self.repos[repo]["private"], "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}
        return httpx2.Response(200, json=info)

    def _paths_info(self, request, host, repo, rev):
        if repo not in self.repos:
            return self._missing_repo(repo)
        body = request.content.decode()
        wanted = json.loads(body)["paths"] if body.startswith("{") else httpx2.QueryParams(body).get_list("paths")
        files, entries = self.files(repo), []
        for path in wanted:
            if path in files:
                data = files[path]
                entries.append({"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
            elif any(name.startswith(path.rstrip("/") + "/") for name in files) or path in ("", "."):
                oid = hashlib.sha1(path.encode()).hexdigest()
                entries.append({"type": "directory", "path": path, "oid": oid, "size": 0})
        return httpx2.Response(200, json=entries)

    def _tree(self, request, host, repo, rev, folder=None):
        if repo not in self.repos:
            return self._missing_repo(repo)
        prefix = f"{folder.rstrip('/')}/" if folder else ""
        recursive = request.url.params.get("recursive", "false") == "true"
        entries, folders = [], set()
        for name, data in sorted(self.files(repo).items()):
            if not name.startswith(prefix):
                continue
            relative = name[len(prefix):]
            parts = relative.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
        entries += [{"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0} for path in sorted(folders)]
        if not entries and prefix:
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": f"{folder} not found"})
        return httpx2.Response(200, json=entries)

    def _resolve(self, request, host, repo, rev, file):
        if repo not in self.repos:
            return self._missing_repo(repo)
        files = self.files(repo)
        if file not in files:
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self._head(repo)},
                                   json={"error": f"{file} not found"})
        data = files[file]
        headers = {"X-Repo-Commit": self._head(repo), "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if ranged and request.method == "GET":  # HfFileSystem reads files in ranges
            start, end = int(ranged[1]), min(int(ranged[2] or len(data) - 1), len(data) - 1)
            headers.update(
                {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Content-Length": str(end + 1 - start)}
            )
            return httpx2.Response(206, headers=headers, content=data[start : end + 1])
        headers["Content-Length"] = str(len(data))
        return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)
