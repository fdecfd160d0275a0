#!/usr/bin/env bash
# RUN in all its forms: exec form, SHELL, heredocs (plain, <<-, a script with its #! line, several
# on one line), --network, and every --mount type: cache (kept between builds and shared, with
# uid/gid/mode), bind (from the context and from a stage, read-only unless rw, and rw writes do not
# stay), tmpfs, secret (from a file and from the environment; never in a layer, the history or the
# config) and ssh (a socket at SSH_AUTH_SOCK). Mount points never end up in the image.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need python3

busybox_image busybox:latest
ctx=$WORK/ctx
mkdir -p "$ctx/conf"
echo "from the context" >"$ctx/conf/app.conf"
echo "s3cr3t-file-value" >"$WORK/token.txt"
export KILN_TEST_TOKEN="s3cr3t-env-value"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox AS tool
RUN mkdir -p /opt && echo "tool output" > /opt/tool.txt

FROM busybox
SHELL ["/bin/sh", "-e", "-c"]
RUN ["/bin/sh", "-c", "echo exec form > /exec.txt"]
RUN <<EOF
echo "plain heredoc" > /heredoc1.txt
echo "second line" >> /heredoc1.txt
EOF
RUN <<-EOF
	echo "tabs stripped" > /heredoc2.txt
	EOF
RUN <<EOF
#!/bin/sh
echo "script with shebang: $0" > /heredoc3.txt
EOF
RUN <<A cat > /heredoc4a.txt && <<B cat > /heredoc4b.txt
first
A
second
B
RUN --mount=type=cache,target=/cache,id=counter,uid=1000,gid=1000,mode=0750 \
    n=$(cat /cache/n 2>/dev/null || echo 0); echo $((n+1)) > /cache/n; \
    stat -c '%u:%g:%a' /cache > /cache-owner.txt; cp /cache/n /cache-n.txt
RUN --mount=type=bind,source=conf,target=/mnt/conf cat /mnt/conf/app.conf > /bound.txt; \
    (touch /mnt/conf/new 2>/dev/null && echo writable || echo read-only) > /bind-mode.txt
RUN --mount=type=bind,from=tool,source=/opt,target=/mnt/tool,rw \
    cat /mnt/tool/tool.txt > /from-stage.txt && echo scribble > /mnt/tool/scribble
RUN --mount=type=tmpfs,target=/scratch,size=1m \
    echo hi > /scratch/x && df /scratch | tail -1 | awk '{print $1}' > /tmpfs.txt
RUN --mount=type=secret,id=token \
    --mount=type=secret,id=envtoken,env=ENV_TOKEN \
    wc -c < /run/secrets/token > /secret-len.txt && \
    printf %s "$ENV_TOKEN" | wc -c > /secret-env.txt && \
    stat -c %a /run/secrets/token > /secret-mode.txt
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "agent at $SSH_AUTH_SOCK" > /ssh.txt
RUN --network=none ip link 2>/dev/null | grep -c ': ' > /links.txt || cat /proc/net/dev | grep -c ':' > /links.txt
DOCKERFILE

# A stand-in agent: any listening unix socket.
python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); time.sleep(120)' \
  "$WORK/agent.sock" &
agent=$!
trap 'kill $agent 2>/dev/null; cleanup' EXIT
for _ in $(seq 50); do [[ -S $WORK/agent.sock ]] && break; sleep 0.1; done

build() {
  kiln build --progress plain -t mounts:1 --secret id=token,src="$WORK/token.txt" \
    --secret id=envtoken,env=KILN_TEST_TOKEN --ssh default="$WORK/agent.sock" "$@" "$ctx" >"$WORK/out" 2>"$WORK/progress" ||
    fail "build failed: $(cat "$WORK/progress")"
}
build
in_image() { kiln run --rm mounts:1 cat "$1"; }
assert_eq "$(in_image /exec.txt)" "exec form" "RUN exec form"
assert_eq "$(in_image /heredoc1.txt)" "$(printf 'plain heredoc\nsecond line')" "RUN heredoc"
assert_eq "$(in_image /heredoc2.txt)" "tabs stripped" "RUN <<- heredoc"
assert_eq "$(in_image /heredoc3.txt)" "script with shebang: /dev/pipes/EOF" "a heredoc with #! runs as a script"
assert_eq "$(in_image /heredoc4a.txt) $(in_image /heredoc4b.txt)" "first second" "two heredocs on one line"
assert_contains "$(cat "$WORK/progress")" "RUN <<EOF (#!/bin/sh...)" "BuildKit's heredoc summary in the step name"
assert_eq "$(in_image /cache-n.txt)" "1" "a new cache mount"
assert_eq "$(in_image /cache-owner.txt)" "1000:1000:750" "cache mount uid, gid, mode"
assert_eq "$(in_image /bound.txt)" "from the context" "bind from the context"
assert_eq "$(in_image /bind-mode.txt)" "read-only" "bind is read-only by default"
assert_eq "$(in_image /from-stage.txt)" "tool output" "bind from a stage"
assert_eq "$(in_image /tmpfs.txt)" "tmpfs" "tmpfs mount"
assert_eq "$(in_image /secret-len.txt)" "18" "secret from a file"
assert_eq "$(in_image /secret-env.txt)" "16" "secret as an environment variable"
assert_eq "$(in_image /secret-mode.txt)" "400" "secret file mode"
assert_eq "$(in_image /ssh.txt)" "agent at /run/buildkit/ssh_agent.0" "ssh agent socket"
assert_eq "$(in_image /links.txt)" "1" "--network=none has only loopback"

# No mount point, secret or written-to bind stays in the image.
kiln export -o "$WORK/rootfs.tar" mounts:1
listing=$(tar -tf "$WORK/rootfs.tar")
for gone in cache/ mnt/ scratch/ run/secrets run/buildkit dev/pipes; do
  assert_not_contains "$listing" "$gone" "mount point $gone left in the image"
done
kiln save -o "$WORK/image.tar" mounts:1
mkdir "$WORK/saved" && tar -C "$WORK/saved" -xf "$WORK/image.tar"
for blob in "$WORK"/saved/blobs/sha256/*; do
  if zcat -f "$blob" | grep -aq -e s3cr3t-file-value -e s3cr3t-env-value; then fail "a secret is in blob $blob"; fi
done
assert_not_contains "$(kiln history --no-trunc mounts:1)" "s3cr3t" "secrets in the history"

# The cache mount persists and is shared between builds: the counter goes on (--no-cache runs the
# step again; the cache mount is not the build cache).
build --no-cache
assert_eq "$(in_image /cache-n.txt)" "2" "the cache mount kept its content"
echo ok
