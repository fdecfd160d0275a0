#!/usr/bin/env bash
# kiln commit and export of a rootless container write the owners the container saw, not the
# host's: its root (the caller, on the host) is 0, a file it gave to 1000 (a subordinate ID on the
# host) is 1000. The test makes its own user with a subordinate range (and removes it).
source "$(dirname "$0")/lib.sh"
[[ $(id -u) -eq 0 ]] || skip "needs root to create the unprivileged test user"
need useradd userdel newuidmap newgidmap runuser tar jq
grep -qw overlay /proc/filesystems || skip "needs the overlay filesystem"

user=kilncr$$
at_exit 'userdel -r "$user" >/dev/null 2>&1; sed -i "/^$user:/d" /etc/subuid /etc/subgid'
useradd -M -s /bin/sh "$user"
# As run_rootless.sh: a range past every one given out, unless useradd gave the user one.
if ! grep -q "^$user:" /etc/subuid || ! grep -q "^$user:" /etc/subgid; then
  sed -i "/^$user:/d" /etc/subuid /etc/subgid
  start=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN {m = 300000} {e = $2 + $3; if (e > m) m = e} END {print m}')
  echo "$user:$start:65536" >>/etc/subuid
  echo "$user:$start:65536" >>/etc/subgid
fi

chmod 755 "$WORK"
install -m 755 "$KILN" "$WORK/kiln"
make_busybox_tar "$WORK/busybox.tar"
chmod 644 "$WORK/busybox.tar"
install -d -o "$user" -m 700 "$WORK/store-$user" "$WORK/out"
as_user() { runuser -u "$user" -- env KILN_ROOT="$WORK/store-$user" HOME="$WORK" "$WORK/kiln" "$@"; }
runuser -u "$user" -- unshare --user true 2>/dev/null || skip "unprivileged user namespaces are disabled on this host"
as_user import --change 'CMD ["sh"]' "$WORK/busybox.tar" busybox:latest >/dev/null

as_user run --name made busybox sh -c 'touch /made-by-root /owned && chown 1000:1000 /owned' >/dev/null
# On the host the files are the caller's and a subordinate ID's: what a layer must not hold.
upper=$(find "$WORK/store-$user/containers" -maxdepth 2 -name upper)
assert_eq "$(stat -c %u "$upper/made-by-root")" "$(id -u "$user")" "the host sees the caller"
[[ $(stat -c %u "$upper/owned") -ne 1000 ]] || fail "the host sees 1000 itself: no subordinate range in use"

# owners TAR: "uid/gid name" per entry, numeric, sorted.
owners() { tar -tvv --numeric-owner -f "$1" | awk '{print $2, $NF}' | sort; }

# diff compares the host's owners with the host's: the two files are new, nothing else changed.
assert_eq "$(as_user diff made | tr '\n' ' ')" "A /made-by-root A /owned " "diff"

as_user commit made committed:1 >/dev/null
as_user save -o "$WORK/out/committed.tar" committed:1
mkdir "$WORK/saved"
tar -C "$WORK/saved" -xf "$WORK/out/committed.tar"
layer=$(jq -r '.[0].Layers[-1]' "$WORK/saved/manifest.json")
assert_eq "$(owners "$WORK/saved/$layer")" "$(printf '0/0 made-by-root\n1000/1000 owned')" \
  "the committed layer holds the container's IDs"

# export: the whole root filesystem as the container saw it, the image's files (unpacked by the
# caller) as root's.
as_user export -o "$WORK/out/made.tar" made
exported=$(owners "$WORK/out/made.tar")
assert_contains "$exported" "1000/1000 owned" "export: the chowned file"
assert_contains "$exported" "0/0 made-by-root" "export: the new file"
assert_contains "$exported" "0/0 bin/busybox" "export: the image's files"
assert_eq "$(awk '{print $1}' <<<"$exported" | sort -u | tr '\n' ' ')" "0/0 1000/1000 " "export: no host IDs"

# The image runs with the file owned by 1000. Root runs it, from the saved archive: rootless, kiln
# unpacks layers as the caller and cannot give their files away, so every file is the container's
# root there.
kiln load -i "$WORK/out/committed.tar" >/dev/null
assert_eq "$(kiln run --rm committed:1 stat -c '%u:%g' /owned /made-by-root | tr '\n' ' ')" "1000:1000 0:0 " \
  "kiln run shows the committed owners"
note "ok"
