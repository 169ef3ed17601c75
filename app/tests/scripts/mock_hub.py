#!/usr/bin/env python3
"""A small stand-in for the Hugging Face hub, for `cellm pull` tests (no network here).

It serves the endpoints huggingface_hub and `cellm pull` use, with the hub's headers:
  GET  /api/models/ORG/NAME/revision/REV[?blobs=true]  repo info, `siblings` (+ blobId, size, lfs)
  GET  /api/models/ORG/NAME/tree/REV[/PATH]?recursive=  the file tree (huggingface_hub >= 1.0)
  HEAD/GET /ORG/NAME/resolve/REV/PATH  small files inline (ETag = git blob id); LFS files as a
       302 to /cdn/SHA256 on a second port (another origin, like the CDN) with X-Linked-Etag / X-Linked-Size; always X-Repo-Commit
  GET  /cdn/SHA256  the LFS content, with HTTP Range (206 + Content-Range)
Repositories: org/tiny (public), org/gated (401 + X-Error-Code: GatedRepo without the token
"hf_good"), org/corrupt (its LFS sha256 in the metadata does not match the content).
--cut-lfs N: the first full GET of an LFS blob sends N bytes then drops the connection.
Every request is appended to --log as "METHOD PATH RANGE". Prints the port on stdout.
"""
import argparse
import hashlib
import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_repo(seed: int, corrupt: bool = False):
    rng = random.Random(seed)
    weights = bytes(rng.getrandbits(8) for _ in range(1_500_000))
    files = {
        "config.json": json.dumps({"model_type": "gemma3_text", "seed": seed}).encode(),
        "tokenizer_config.json": b'{"add_bos_token": true}',
        "sub/notes.txt": b"nested file\n",
        "model.safetensors": weights,
    }
    lfs = {"model.safetensors"}
    entries = {}
    for path, data in files.items():
        e = {"data": data, "size": len(data), "blob_id": git_blob_id(data), "lfs": None}
        if path in lfs:
            sha = hashlib.sha256(data).hexdigest()
            if corrupt:
                sha = hashlib.sha256(b"something else").hexdigest()
            e["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
        entries[path] = e
    commit = hashlib.sha1(b"commit %d %d" % (seed, corrupt)).hexdigest()
    return {"commit": commit, "files": entries}


REPOS = {
    "org/tiny": make_repo(1),
    "org/gated": make_repo(2),
    "org/corrupt": make_repo(3, corrupt=True),
}
GATED = {"org/gated"}
TOKEN = "hf_good"
STATE = {"cut": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self):
        if self.server.log_path:
            line = f"{self.command} {self.path} {self.headers.get('Range', '-')}\n"
            with LOCK, open(self.server.log_path, "a") as f:
                f.write(line)

    def send_json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def authorized(self, repo_id):
        if repo_id not in GATED:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {TOKEN}"

    def gated(self, repo_id):
        msg = (f"Access to model {repo_id} is restricted. You must have access to it and be "
               "authenticated to access it. Please log in.")
        self.send_json(401, {"error": msg}, {"X-Error-Code": "GatedRepo", "X-Error-Message": msg})

    def not_found(self, code="RepoNotFound"):
        self.send_json(404, {"error": code}, {"X-Error-Code": code})

    def repo_and_rest(self, parts):
        if len(parts) < 2:
            return None, None, parts
        repo_id = "/".join(parts[:2])
        return repo_id, REPOS.get(repo_id), parts[2:]

    def resolve_rev(self, repo, rev):
        rev = unquote(rev)
        if rev in ("main", repo["commit"]):
            return repo["commit"]
        return None

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.record()
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:2] == ["api", "models"]:
            return self.api(parts[2:], url.query)
        if parts and parts[0] == "cdn":
            return self.cdn(parts[1] if len(parts) > 1 else "")
        repo_id, repo, rest = self.repo_and_rest(parts)
        if repo is None or len(rest) < 3 or rest[0] != "resolve":
            return self.not_found()
        if not self.authorized(repo_id):
            return self.gated(repo_id)
        commit = self.resolve_rev(repo, rest[1])
        if commit is None:
            return self.not_found("RevisionNotFound")
        path = unquote("/".join(rest[2:]))
        entry = repo["files"].get(path)
        if entry is None:
            return self.not_found("EntryNotFound")
        if entry["lfs"]:
            sha = entry["lfs"]["sha256"]
            self.send_response(302)
            # Another origin, as the hub's CDN is: clients must not carry the token there.
            cdn = f"http://127.0.0.1:{self.server.cdn_port}"
            self.send_header("Location", f"{cdn}/cdn/{sha}?repo={repo_id}&file={path}")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(entry["size"]))
            self.send_header("ETag", f'"{entry["blob_id"]}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_bytes(entry["data"], {"ETag": f'"{entry["blob_id"]}"', "X-Repo-Commit": commit})

    def send_bytes(self, data, headers, cut=0):
        rng = self.headers.get("Range")
        start = 0
        status = 200
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            end = int(b) if b else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data_out = data[start:end + 1]
            status = 206
        else:
            data_out = data
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data_out)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(data_out) - 1}/{len(data)}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(data_out[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data_out)

    def cdn(self, sha):
        for repo in REPOS.values():
            for entry in repo["files"].values():
                if entry["lfs"] and entry["lfs"]["sha256"] == sha:
                    cut = 0
                    with LOCK:
                        if STATE["cut"] and not self.headers.get("Range") and self.command == "GET":
                            cut, STATE["cut"] = STATE["cut"], 0
                    return self.send_bytes(entry["data"], {"ETag": f'"{sha}"'}, cut)
        self.not_found("EntryNotFound")

    def api(self, parts, query):
        repo_id, repo, rest = self.repo_and_rest(parts)
        if repo is None:
            return self.send_json(401, {"error": "Repository Not Found"}, {"X-Error-Code": "RepoNotFound"})
        if not self.authorized(repo_id):
            return self.gated(repo_id)
        if len(rest) >= 2 and rest[0] in ("revision", "tree"):
            commit = self.resolve_rev(repo, rest[1])
            if commit is None:
                return self.send_json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        else:
            return self.not_found()
        files = repo["files"]
        if rest[0] == "revision":
            blobs = "blobs=true" in query
            siblings = []
            for path, e in files.items():
                s = {"rfilename": path}
                if blobs:
                    s["blobId"] = e["blob_id"]
                    s["size"] = e["size"]
                    if e["lfs"]:
                        s["lfs"] = e["lfs"]
                siblings.append(s)
            return self.send_json(200, {
                "_id": "0" * 24, "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
                "sha": commit, "lastModified": "2025-01-01T00:00:00.000Z", "private": False,
                "disabled": False, "gated": "manual" if repo_id in GATED else False,
                "tags": [], "downloads": 0, "likes": 0, "library_name": "transformers",
                "siblings": siblings, "createdAt": "2025-01-01T00:00:00.000Z",
            }, {"X-Repo-Commit": commit})
        # tree: everything under PATH (recursive) or its direct children.
        prefix = unquote("/".join(rest[2:]))
        recursive = "recursive=true" in query.lower()
        out, dirs = [], set()
        for path, e in files.items():
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1:] if prefix else path
            segs = rel.split("/")
            for i in range(1, len(segs)):
                d = "/".join(([prefix] if prefix else []) + segs[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": git_blob_id(d.encode()), "size": 0, "path": d})
            if recursive or len(segs) == 1:
                item = {"type": "file", "oid": e["blob_id"], "size": e["size"], "path": path}
                if e["lfs"]:
                    item["lfs"] = {"oid": e["lfs"]["sha256"], "size": e["lfs"]["size"],
                                   "pointerSize": e["lfs"]["pointerSize"]}
                out.append(item)
        self.send_json(200, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", default=None)
    ap.add_argument("--cut-lfs", type=int, default=0)
    args = ap.parse_args()
    STATE["cut"] = args.cut_lfs
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    for s in (cdn, server):
        s.daemon_threads = True
        s.log_path = args.log
        s.cdn_port = cdn.server_address[1]
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
