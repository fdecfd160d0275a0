# --chown (numbers, names from the image's /etc/passwd and /etc/group, a user alone) and --chmod on
# files. Directories made for the copy get --chown's owner. (What --chmod does to the directories a
# copy makes, and to set-id bits, changed after the BuildKit that Debian's Docker has: see
# ../flags.Dockerfile.)
FROM copy-base:1
COPY --chown=1001 a.txt /own1/x/
COPY --chown=alice a.txt /own2/
COPY --chown=alice:wheel a.txt /own3
COPY --chown=1001:1003 dir /own4
COPY --chown=alice:1003 dir /own5/deep/
COPY --chown=nobody dir/ /etc/
COPY --chmod=0700 a.txt /m1
COPY --chmod=755 b.txt /m4/
COPY suid.bin /m6
