FROM scratch
COPY -- onlyone
