#!/usr/bin/env bash
# Where the store lives: --root, else KILN_ROOT, else /var/lib/kiln for root and
# $XDG_DATA_HOME/kiln (or ~/.local/share/kiln) for other users.
source "$(dirname "$0")/lib.sh"
need setpriv tar

make_busybox_tar "$WORK/bb.tar"
kiln --root "$WORK/by-flag" import "$WORK/bb.tar" flag:1 >/dev/null
[[ -f $WORK/by-flag/oci/index.json ]] || fail "--root did not choose the store"
assert_eq "$(KILN_ROOT=$WORK/elsewhere "$KILN" --root "$WORK/by-flag" images --format '{{.Repository}}')" "flag" \
  "--root wins over KILN_ROOT"
assert_eq "$(kiln images --format '{{.Repository}}')" "" "KILN_ROOT chose another store"
assert_eq "$(env -u KILN_ROOT "$KILN" version | awk '/Store:/ {print $2}')" \
  "$([[ $(id -u) -eq 0 ]] && echo /var/lib/kiln || echo "${XDG_DATA_HOME:-$HOME/.local/share}/kiln")" "default store"

# An unprivileged user's default store is under their own home.
[[ $(id -u) -eq 0 ]] || { echo ok; exit 0; }
home=$WORK/home && mkdir -p "$home" && chown 65534:65534 "$home" && chmod 755 "$WORK"
cp "$WORK/bb.tar" "$home/bb.tar" && chown 65534:65534 "$home/bb.tar"
as_user() { setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin HOME="$home" "$@"; }
as_user "$KILN" import "$home/bb.tar" mine:1 >/dev/null || fail "an unprivileged import"
[[ -f $home/.local/share/kiln/oci/index.json ]] || fail "the default store is not ~/.local/share/kiln"
as_user XDG_DATA_HOME="$home/xdg" "$KILN" import "$home/bb.tar" xdg:1 >/dev/null
[[ -f $home/xdg/kiln/oci/index.json ]] || fail "the default store is not \$XDG_DATA_HOME/kiln"
assert_eq "$(as_user "$KILN" images --format '{{.Repository}}')" "mine" "each store holds its own images"
echo ok
