FROM scratch
RUN --mounts=type=cache,target=/x make
