FROM scratch
ARG SRC=app DEST=/opt
ENV OWNER=1000
COPY --chown=${OWNER}:${OWNER} --chmod=755 ${SRC}/bin "$DEST/my_dir/"
WORKDIR ${DEST}/work
USER ${OWNER}
VOLUME $DEST/data
STOPSIGNAL ${SIG:-SIGQUIT}
