#!/usr/bin/env bash
# kiln build of a one-stage Dockerfile on busybox: every config instruction lands in the image
# config with Docker's meaning, RUN sees ENV, ARG and WORKDIR, COPY brings context files, the image
# runs with kiln run and peers (skopeo, umoci) read it; a rebuild takes every step from the cache and
# gives the same image.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need skopeo umoci jq

busybox_image busybox:latest
ctx=$WORK/ctx
mkdir -p "$ctx/src/sub"
echo "hello from the context" >"$ctx/src/greeting.txt"
echo "nested" >"$ctx/src/sub/nested.txt"
printf '#!/bin/sh\necho "entry: $*"\n' >"$ctx/entry.sh"
chmod 755 "$ctx/entry.sh"
cat >"$ctx/Dockerfile" <<'EOF'
FROM busybox
LABEL org.example.title="kiln test" version=1
ARG VERSION=1.0
ENV APP_HOME=/srv/app \
    MODE=production
WORKDIR $APP_HOME
COPY src/ ./data/
COPY entry.sh /usr/local/bin/
RUN echo "version $VERSION in $(pwd) as $(id -u)" > built.txt && ls data > listing.txt
USER nobody
EXPOSE 8080 53/udp
VOLUME ["/srv/state"]
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --timeout=3s CMD wget -q -O- http://localhost:8080/ || exit 1
ENTRYPOINT ["/usr/local/bin/entry.sh"]
CMD ["serve"]
EOF

kiln build --progress plain -t app:1 --build-arg VERSION=2.5 --iidfile "$WORK/iid" "$ctx" >"$WORK/out" 2>"$WORK/progress" ||
  fail "build failed: $(cat "$WORK/progress")"
id=$(tail -n1 "$WORK/out")
[[ $id == sha256:* ]] || fail "the last line is not the image ID: $id"
assert_eq "$(cat "$WORK/iid")" "$id" "--iidfile"
assert_contains "$(cat "$WORK/progress")" "#4 [3/5] COPY src/ ./data/" "BuildKit's step names"
assert_contains "$(cat "$WORK/progress")" "naming to docker.io/library/app:1 done" "tagging"

# The image config, as Docker would write it.
config=$(kiln inspect --format '{{json .Config}}' app:1)
assert_eq "$(jq -c .Env <<<"$config")" '["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","APP_HOME=/srv/app","MODE=production"]' "Env (build args not stored)"
assert_eq "$(jq -r .WorkingDir <<<"$config")" "/srv/app" "WorkingDir"
assert_eq "$(jq -r .User <<<"$config")" "nobody" "User"
assert_eq "$(jq -c '.ExposedPorts | keys' <<<"$config")" '["53/udp","8080/tcp"]' "ExposedPorts"
assert_eq "$(jq -c '.Volumes | keys' <<<"$config")" '["/srv/state"]' "Volumes"
assert_eq "$(jq -r .StopSignal <<<"$config")" "SIGQUIT" "StopSignal"
assert_eq "$(jq -c .Entrypoint <<<"$config")" '["/usr/local/bin/entry.sh"]' "Entrypoint"
assert_eq "$(jq -c .Cmd <<<"$config")" '["serve"]' "Cmd"
assert_eq "$(jq -c .Labels <<<"$config")" '{"org.example.title":"kiln test","version":"1"}' "Labels"
# Go's index, as docker's templates use it: a list element, a map key (absent: empty), out of range.
assert_eq "$(kiln inspect --format '{{index .Config.Labels "version"}}|{{index .Config.Labels "none"}}|{{index .Config.Env 1}}' app:1)" \
  "1||APP_HOME=/srv/app" "--format with index"
expect_fail 1 "index out of range: 9" kiln inspect --format '{{index .Config.Env 9}}' app:1
assert_eq "$(jq -c .Healthcheck <<<"$config")" \
  '{"Interval":30000000000,"Test":["CMD-SHELL","wget -q -O- http://localhost:8080/ || exit 1"],"Timeout":3000000000}' "Healthcheck"

# History as BuildKit writes it: RUN with the build args in scope, empty_layer for config steps.
history=$(kiln history --no-trunc --format '{{.CreatedBy}}' app:1)
assert_contains "$history" 'RUN |1 VERSION=2.5 /bin/sh -c echo "version $VERSION in $(pwd) as $(id -u)" > built.txt && ls data > listing.txt # buildkit' "RUN history"
assert_contains "$history" 'COPY src/ ./data/ # buildkit' "COPY history"
assert_contains "$history" 'CMD ["serve"]' "CMD history"
assert_eq "$(kiln history -q app:1 | wc -l)" "15" "one history entry per instruction, the base's included"

# The image runs, and what RUN and COPY made is there.
assert_eq "$(kiln run --rm app:1)" "entry: serve" "ENTRYPOINT + CMD"
assert_eq "$(kiln run --rm --entrypoint cat app:1 /srv/app/built.txt)" "version 2.5 in /srv/app as 0" "RUN saw ARG, ENV, WORKDIR"
assert_eq "$(kiln run --rm --entrypoint cat app:1 /srv/app/data/greeting.txt)" "hello from the context" "COPY dir/"
assert_eq "$(kiln run --rm --entrypoint cat app:1 /srv/app/data/sub/nested.txt)" "nested" "COPY keeps the tree"
assert_eq "$(kiln run --rm --entrypoint sh app:1 -c 'stat -c %u:%g:%a /srv/app/data/greeting.txt /usr/local/bin/entry.sh')" \
  "$(printf '0:0:644\n0:0:755')" "COPY from the context: owned by root, modes kept"
assert_eq "$(kiln run --rm --entrypoint id app:1 -u)" "65534" "USER"

# Peers read it: skopeo from the store's OCI layout, umoci unpacks it.
kiln save -o "$WORK/app.tar" app:1
mkdir "$WORK/layout" && tar -C "$WORK/layout" -xf "$WORK/app.tar"
assert_eq "$(skopeo inspect --config "oci:$WORK/layout" | jq -r .config.WorkingDir)" "/srv/app" "skopeo"
umoci unpack --rootless --image "$WORK/layout:1" "$WORK/bundle" >/dev/null 2>&1 ||
  umoci unpack --image "$WORK/layout:1" "$WORK/bundle" >/dev/null
assert_eq "$(cat "$WORK/bundle/rootfs/srv/app/data/greeting.txt")" "hello from the context" "umoci"

# A rebuild: every step from the cache, the same image.
kiln build --progress plain -t app:1 --build-arg VERSION=2.5 "$ctx" >"$WORK/out2" 2>"$WORK/progress2"
assert_eq "$(tail -n1 "$WORK/out2")" "$id" "a rebuild from the cache gives the same image"
assert_eq "$(grep -c CACHED "$WORK/progress2")" "5" "FROM, WORKDIR, 2 COPY and RUN from the cache"
echo ok
