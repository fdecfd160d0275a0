FROM scratch
RUN python3 <<PY
print(1)
