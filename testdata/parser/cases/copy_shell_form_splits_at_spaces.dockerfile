FROM scratch
COPY "my file" /dst/
