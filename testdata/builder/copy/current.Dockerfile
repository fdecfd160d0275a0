# What COPY and ADD do in current BuildKit (moby/buildkit's dockerfile2llb and file backend,
# tonistiigi/fsutil's copy), where the BuildKit in Debian's Docker (0.8) did otherwise or could not
# read the Dockerfile at all. Judged against current.expected by build_copy_semantics.sh.
FROM copy-base:2
# --chmod octal: its set-id bits are set and the source's are not kept (0.8 kept the source's and
# ignored the value's), and the directories a copy makes get the mode too (fsutil #228; 0.8 made
# them 0755).
COPY --chmod=0640 dir /m1
COPY --chmod=0640 dir /m2/x/
COPY --chmod=4755 exec.sh /m3
COPY --chmod=0600 suid.bin /m4
# --chmod symbolic (Dockerfile 1.14; 0.8 ignored a value it could not read as octal): BSD's
# setmode with Linux's X.
COPY --chmod=u=rwX,go=rX dir /s1/
COPY --chmod=go-w,u+x a.txt exec.sh /s2/
COPY --chmod=a=rX dir /s3/
COPY --chmod=g=u b.txt /s4
# ADD: zstd archives are unpacked (0.8 copied them), --chown owns every entry (0.8 kept the
# archive's owners and gave --chown's only to the directories it made).
ADD t.tar.zst /x1/
ADD --chown=1001:1003 t.tar /x2/
ADD --chown=alice t.tar /x3/
ADD --chown=1001 --chmod=0600 deep.tar /x4/
# --parents: the source's path kept under the destination, below a /./ pivot when there is one;
# directories above a match made with their own modes.
COPY --parents dir/sub/x dir2/*/x /p1/
COPY --parents dir/./sub /p2
COPY --parents ./dir2/./a /p3/
COPY --parents dir2/*/y /p4
# --exclude: patterns below the source copied, a directory's match covering what it holds.
COPY --exclude=sub --exclude=*.txt dir /e1/
COPY --exclude=**/x dir2 /e2/
# --link (without --chmod): made as on an empty root, so the directories on the way are new ones,
# /tmp 0755 and /lnkdir a directory instead of the image's symlink; with --chmod BuildKit does not
# link.
COPY --link a.txt /tmp/
COPY --link a.txt /lnkdir/
COPY --link --chmod=600 b.txt /tmp/
# Heredocs (Dockerfile 1.4): a file named after the heredoc, 0644 and root's before the flags.
COPY <<EOF /hd1
hello
EOF
COPY --chmod=0755 --chown=alice <<one <<two /hd2/
first
one
second
two
# Several sources onto a path that is not a directory: copied in turn, the heredoc last.
COPY a.txt <<EOF /hd3
last
EOF
