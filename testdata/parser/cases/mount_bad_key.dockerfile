FROM scratch
RUN --mount=type=cache,target=/c,colour=red true
