# syntax=docker/dockerfile:1

# check=skip=all
FROM scratch
