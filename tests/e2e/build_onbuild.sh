#!/usr/bin/env bash
# ONBUILD: triggers are stored in the image config and run, right after FROM, when a later build
# uses the image as its base; the child image does not keep them. Also MAINTAINER, and FROM of an
# image whose own Env is seen by the child's variable substitution.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need jq

busybox_image busybox:latest
mkdir -p "$WORK/parent" "$WORK/child"
cat >"$WORK/parent/Dockerfile" <<'DOCKERFILE'
FROM busybox
MAINTAINER Jane Doe <jane@example.com>
ENV TOOLS=/opt/tools
ONBUILD COPY app.txt $TOOLS/
ONBUILD RUN echo "triggered in $TOOLS" > /triggered.txt
DOCKERFILE
kiln build --progress plain -t parent:1 "$WORK/parent" >/dev/null 2>"$WORK/progress" || fail "parent: $(cat "$WORK/progress")"
assert_eq "$(kiln inspect --format '{{json .Config.OnBuild}}' parent:1)" \
  '["COPY app.txt $TOOLS/","RUN echo \"triggered in $TOOLS\" > /triggered.txt"]' "triggers stored as written"
assert_eq "$(kiln inspect --format '{{.Author}}' parent:1)" "Jane Doe <jane@example.com>" "MAINTAINER"

echo "the child's file" >"$WORK/child/app.txt"
cat >"$WORK/child/Dockerfile" <<'DOCKERFILE'
FROM parent:1
RUN echo "child sees $TOOLS" > /child.txt
DOCKERFILE
kiln build --progress plain -t child:1 "$WORK/child" >/dev/null 2>"$WORK/progress" || fail "child: $(cat "$WORK/progress")"
assert_contains "$(cat "$WORK/progress")" "[2/4] ONBUILD COPY app.txt /opt/tools/" "the trigger runs as a step"
assert_eq "$(kiln run --rm child:1 cat /opt/tools/app.txt)" "the child's file" "ONBUILD COPY from the child's context"
assert_eq "$(kiln run --rm child:1 cat /triggered.txt)" "triggered in /opt/tools" "ONBUILD RUN"
assert_eq "$(kiln run --rm child:1 cat /child.txt)" "child sees /opt/tools" "the base image's ENV in the child"
assert_eq "$(kiln inspect --format '{{json .Config.OnBuild}}' child:1)" "null" "the child keeps no triggers"

# A grandchild runs nothing of the grandparent's triggers.
printf 'FROM child:1\nRUN test ! -e /grand || exit 1\n' >"$WORK/child/Dockerfile"
kiln build --progress plain -t grandchild:1 "$WORK/child" >/dev/null 2>"$WORK/progress" || fail "grandchild: $(cat "$WORK/progress")"
assert_not_contains "$(cat "$WORK/progress")" "ONBUILD" "no triggers in the grandchild"
echo ok
