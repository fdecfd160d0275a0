FROM scratch
CMD ["a", "b c"]
ENTRYPOINT []
RUN ["echo", 'single']
CMD [ "unterminated"
COPY ["a b", "/c d/"]
VOLUME ["/x", "/y"]
