#!/usr/bin/env bash
# ADD https://… as BuildKit does it, against an HTTP server on 127.0.0.1 that the scenario starts:
# the file named after the URL's path (`__unnamed__` without one), mode 0600 and owner 0:0 unless
# --chmod/--chown say otherwise, mtime from Last-Modified, an archive left packed, redirects
# followed, unpacked only with --unpack=true; --checksum verified (a wrong one fails naming both digests and stores nothing); the
# cache on a rebuild: without --checksum the URL is fetched again and the step hits only when the
# file is the same (an ETag makes it a 304 without a body), with --checksum nothing is fetched.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need python3 jq tar sha256sum

busybox_image busybox:latest
www=$WORK/www
mkdir -p "$www/files" "$WORK/ctx"
echo "hello over http" >"$www/files/hello.txt"
mkdir -p "$WORK/t" && echo "inside the archive" >"$WORK/t/inner.txt"
tar -C "$WORK/t" -cf "$www/files/tool.tar" inner.txt
# Last-Modified comes from the files' mtimes.
touch -d '2021-03-04 05:06:07 UTC' "$www/files/hello.txt" "$www/files/tool.tar"
lastmod=$(date -d '2021-03-04 05:06:07 UTC' +%s)

# The server: /files/NAME with Last-Modified and no ETag (python's http.server), /etag/NAME the
# same file with an ETag and If-None-Match answered by 304, /redirect/NAME a 302 to /files/NAME,
# / a page of its own. Every request is logged: method, path, status, If-None-Match.
cat >"$WORK/server.py" <<'PY'
import hashlib, http.server, os, sys
root, port_file, log_file = sys.argv[1:4]

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def log_message(self, *args):
        pass

    def record(self, status):
        with open(log_file, "a") as log:
            log.write(f"{self.command} {self.path} {status} inm={self.headers.get('If-None-Match', '-')}\n")

    # Logged before the answer is sent: a client's next request may reach another thread and be
    # logged first otherwise.
    def answer(self, status, fields, body=b""):
        self.record(status)
        self.send_response(status)
        for name, value in fields:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        name = os.path.basename(path)
        file = os.path.join(root, "files", name)
        if path == "/":
            return self.answer(200, [], b"the index\n")
        if path.startswith("/redirect/"):
            return self.answer(302, [("Location", "/files/" + name)])
        if path.startswith("/etag/") and os.path.isfile(file):
            data = open(file, "rb").read()
            tag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
            modified = self.date_time_string(int(os.stat(file).st_mtime))
            if self.headers.get("If-None-Match") == tag:
                return self.answer(304, [("ETag", tag)])
            return self.answer(200, [("ETag", tag), ("Last-Modified", modified)], data)
        self.path = "/files/" + name
        self.record(404 if not os.path.isfile(file) else 200)
        super().do_GET()

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
python3 "$WORK/server.py" "$www" "$WORK/port" "$WORK/http.log" 2>"$WORK/server.err" &
server_pid=$!
at_exit "kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null"
for _ in $(seq 100); do [[ -s $WORK/port ]] && break; sleep 0.1; done
[[ -s $WORK/port ]] || fail "the HTTP server did not start: $(cat "$WORK/server.err")"
port=$(cat "$WORK/port")
url=http://127.0.0.1:$port
requests() { grep -c "^$1 " "$WORK/http.log" || true; }

build() {  # build TAG [kiln build flags...]: the Dockerfile in $WORK/ctx; progress in $WORK/progress
  local tag=$1; shift
  kiln build --progress plain -t "$tag" "$@" "$WORK/ctx" >"$WORK/out" 2>"$WORK/progress"
}
# What the image's file is, from `kiln export`: mode, owner, mtime, size (python reads the tar).
file_info() {
  kiln export -o "$WORK/export.tar" "$1"
  python3 - "$WORK/export.tar" "$2" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    names = {m.name.lstrip("./"): m for m in t.getmembers()}
    m = names[sys.argv[2].lstrip("/")]
    print(f"{m.type.decode() if m.type != b'0' else 'file'} {m.mode:o} {m.uid}:{m.gid} {int(m.mtime)} {m.size}")
PY
}

# ---- the file as BuildKit makes it
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM busybox
ADD $url/files/hello.txt /data/
ADD $url/files/tool.tar /data/
ADD --chmod=755 --chown=1000:1000 $url/redirect/hello.txt /data/hello-755
ADD $url/ /data/
EOF
build add:1 || fail "build failed: $(cat "$WORK/progress")"
size=$(stat -c %s "$www/files/hello.txt")
assert_eq "$(kiln run --rm add:1 cat /data/hello.txt)" "hello over http" "the content"
assert_eq "$(file_info add:1 /data/hello.txt)" "file 600 0:0 $lastmod $size" "mode 0600, root's, mtime from Last-Modified"
assert_eq "$(file_info add:1 /data/tool.tar)" "file 600 0:0 $lastmod $(stat -c %s "$www/files/tool.tar")" \
  "an archive from a URL is not unpacked"
assert_eq "$(kiln run --rm add:1 ls /data)" "$(printf '__unnamed__\nhello-755\nhello.txt\ntool.tar')" \
  "names: the path's last element, __unnamed__ for /, the destination when it names a file"
assert_eq "$(file_info add:1 /data/hello-755)" "file 755 1000:1000 $lastmod $size" "--chmod, --chown, after a redirect"
assert_eq "$(kiln run --rm add:1 cat /data/__unnamed__)" "the index" "__unnamed__"
history=$(kiln history --no-trunc --format '{{.CreatedBy}}' add:1)
assert_contains "$history" "ADD --chown=1000:1000 --chmod=755 $url/redirect/hello.txt /data/hello-755 # buildkit" "history"
assert_eq "$(find "$KILN_ROOT/tmp" -mindepth 1 -maxdepth 1 | wc -l)" "0" "no download left in tmp/"

# ---- the cache without --checksum: fetched again on every build
before=$(requests GET)
build add:1 || fail "rebuild failed: $(cat "$WORK/progress")"
assert_eq "$(grep -c '^#[0-9]* CACHED' "$WORK/progress")" "5" "an unchanged file: FROM and the four ADD from the cache"
assert_eq "$(($(requests GET) - before))" "5" "yet every URL was fetched again (one is a redirect), as BuildKit does"
id=$(tail -n1 "$WORK/out")
echo "hello again, changed" >"$www/files/hello.txt"
touch -d '2021-03-04 05:06:07 UTC' "$www/files/hello.txt"
build add:2 || fail "build after the change failed: $(cat "$WORK/progress")"
assert_eq "$(kiln run --rm add:2 cat /data/hello.txt)" "hello again, changed" "a changed file misses the cache"
[[ $(tail -n1 "$WORK/out") != "$id" ]] || fail "a changed file gave the same image"
# Same bytes, a new Last-Modified: the file's mtime is in the layer, so it is in the key (as BuildKit's).
touch -d '2022-01-01 00:00:00 UTC' "$www/files/hello.txt"
build add:3 || fail "build after touch failed: $(cat "$WORK/progress")"
assert_eq "$(file_info add:3 /data/hello.txt)" "file 600 0:0 $(date -d '2022-01-01 00:00:00 UTC' +%s) 21" \
  "a new Last-Modified misses the cache"

# ---- --unpack=true: the one way a URL's archive is unpacked
printf 'FROM busybox\nADD --unpack=true %s/files/tool.tar /unpacked/\n' "$url" >"$WORK/ctx/Dockerfile"
build unpacked:1 || fail "build with --unpack=true failed: $(cat "$WORK/progress")"
assert_eq "$(kiln run --rm unpacked:1 ls /unpacked)" "inner.txt" "--unpack=true unpacks the archive"
assert_eq "$(kiln run --rm unpacked:1 cat /unpacked/inner.txt)" "inside the archive" "what it held"

# ---- --checksum: verified while it streams; the cache asked without fetching
sum=$(sha256sum "$www/files/hello.txt" | cut -d' ' -f1)
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM busybox
ADD --checksum=sha256:$sum $url/files/hello.txt /pinned/
EOF
build pinned:1 || fail "build with the right checksum failed: $(cat "$WORK/progress")"
assert_eq "$(kiln run --rm pinned:1 cat /pinned/hello.txt)" "hello again, changed" "--checksum, right"
before=$(requests GET)
echo "changed under a pinned checksum" >"$www/files/hello.txt"
build pinned:2 || fail "rebuild with the checksum failed: $(cat "$WORK/progress")"
assert_eq "$(grep -c '^#[0-9]* CACHED' "$WORK/progress")" "2" "a pinned URL is a cache hit"
assert_eq "$(($(requests GET) - before))" "0" "and nothing was fetched for it"
assert_eq "$(kiln run --rm pinned:2 cat /pinned/hello.txt)" "hello again, changed" "the cached file, as BuildKit"

# The same checksum without the cache: the download no longer matches. The error names both
# digests, and nothing is stored: no layer, no cache record, no name, nothing left in tmp/.
new_sum=$(sha256sum "$www/files/hello.txt" | cut -d' ' -f1)
state=$(store_state)
records=$(find "$KILN_ROOT" -path '*cache*' -type f | sort | xargs -r sha256sum)
expect_fail 1 "ADD \`$url/files/hello.txt\`: digest mismatch: the download is sha256:$new_sum, --checksum is sha256:$sum" \
  kiln build --progress plain --no-cache -t pinned:3 "$WORK/ctx"
assert_eq "$(store_state)" "$state" "a checksum mismatch stores nothing"
assert_eq "$(find "$KILN_ROOT" -path '*cache*' -type f | sort | xargs -r sha256sum)" "$records" "no cache record either"
assert_eq "$(find "$KILN_ROOT/tmp" -mindepth 1 -maxdepth 1 | wc -l)" "0" "and no download left in tmp/"

# ---- ETag: the rebuild asks with If-None-Match, a 304 carries no body
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM busybox
ADD $url/etag/hello.txt /tagged/
EOF
build tagged:1 || fail "build with an ETag failed: $(cat "$WORK/progress")"
build tagged:1 || fail "rebuild with an ETag failed: $(cat "$WORK/progress")"
assert_eq "$(tail -n1 "$WORK/http.log" | cut -d' ' -f1-3)" "GET /etag/hello.txt 304" "If-None-Match answered by 304"
assert_eq "$(grep -c '^#[0-9]* CACHED' "$WORK/progress")" "2" "a 304 is a cache hit"
# A 304 and a step that must run anyway (--no-cache): fetched in full, checked against the record.
build tagged:2 --no-cache || fail "build with an ETag and --no-cache failed: $(cat "$WORK/progress")"
assert_eq "$(tail -n2 "$WORK/http.log" | cut -d' ' -f3 | tr '\n' ' ')" "304 200 " "a 304, then the body"
assert_eq "$(kiln run --rm tagged:2 cat /tagged/hello.txt)" "changed under a pinned checksum" "the file after a 304"
echo "changed behind its ETag" >"$www/files/hello.txt"
build tagged:3 || fail "build after an ETag change failed: $(cat "$WORK/progress")"
assert_eq "$(tail -n1 "$WORK/http.log" | cut -d' ' -f3)" "200" "a new ETag: the body"
assert_eq "$(kiln run --rm tagged:3 cat /tagged/hello.txt)" "changed behind its ETag" "a changed ETag misses the cache"

# ---- failures, in kiln's voice
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM busybox
ADD $url/files/missing.txt /x/
EOF
expect_fail 1 "ADD \`$url/files/missing.txt\`: HTTP 404 Not Found" kiln build --progress plain "$WORK/ctx"
printf 'FROM busybox\nADD --checksum=sha256:%s %s/files/hello.txt %s/etag/hello.txt /x/\n' "$sum" "$url" "$url" \
  >"$WORK/ctx/Dockerfile"
expect_fail 1 "checksum can't be specified for multiple sources" kiln build --progress plain "$WORK/ctx"
printf 'FROM busybox\nADD --checksum=md5:abc %s/files/hello.txt /x/\n' "$url" >"$WORK/ctx/Dockerfile"
expect_fail 1 "ADD --checksum=md5:abc: not a digest" kiln build --progress plain "$WORK/ctx"
printf 'FROM busybox\nCOPY %s/files/hello.txt /x/\n' "$url" >"$WORK/ctx/Dockerfile"
expect_fail 1 "source can't be a URL for COPY" kiln build --progress plain "$WORK/ctx"
echo ok
