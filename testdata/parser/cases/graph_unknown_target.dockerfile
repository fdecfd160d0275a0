FROM alpine AS build
FROM alpine AS test
