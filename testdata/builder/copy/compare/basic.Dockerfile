# Files and directories to paths, through the image's symlinks, relative to WORKDIR.
FROM copy-base:1
# A file to a path; to an existing directory without a trailing /; to a new directory and its
# parents (0755, root's).
COPY a.txt /f1
COPY a.txt /etc
COPY a.txt /new1/new2/
COPY b.txt suid.bin exec.sh /multi/
# A directory's contents, not the directory: the destination is made 0755, not dir's 0750.
COPY dir /d1
COPY dir/ /d2/
COPY dir /etc/
COPY . /ctxall/
# Symlinks named as sources are followed (a file, a directory's contents); under a directory they
# are copied as they are.
COPY link-to-a /sl1
COPY link-to-dir /sl2/
COPY link-to-dir /sl3
COPY link-to-a /sl4/
COPY dir/uplink /sl5
# Through /var/run -> ../run.
COPY a.txt /var/run/
COPY a.txt /var/run/x/y
WORKDIR /wd
COPY a.txt rel1
COPY a.txt rel/
COPY a.txt .
COPY dir/sub ../up/
# Several sources onto a path without a trailing /: copied in turn, the last one stays (BuildKit
# has no error for it; Docker's classic builder had).
COPY a.txt b.txt /one
# Hard links: kept within one source, not across two.
COPY dir/hard1 dir/hard2 /hl/
