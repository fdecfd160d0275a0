# COPY --from a stage and from an image: owners kept, --chown over them, symlinks named as sources
# followed, wildcards through a symlink to a directory.
FROM copy-base:2 AS src
FROM copy-base:1
COPY --from=src /data /fd1
COPY --from=src /data/ /fd2/
COPY --from=src /data/owned /fd3
COPY --from=src /data/owned-link /fd4
COPY --from=src /data/sub /fd5/x/
COPY --from=src --chown=1001:1003 /data /fd6
COPY --from=src /lnkdir /fd7
COPY --from=src /lnkdir/* /fd8/
COPY --from=src /srv /etc/
COPY --from=copy-base:2 /data/sub /fd9
