ARG OK=1
RUN echo no stage yet
FROM scratch
