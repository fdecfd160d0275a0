FROM scratch
RUN --mount=type=cache,target=/c,sharing=sometimes true
