FROM scratch
HEALTHCHECK --retries=-1 CMD true
