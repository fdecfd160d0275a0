FROM scratch
RUN --mount=type=cache,id=x true
