FROM scratch
ARG NAME=world
RUN <<EOF
echo hello $NAME
EOF
RUN <<-"END" bash
	echo tabs
		END
RUN cat <<A && cat <<'B' > /out
a body
A
b body
B
COPY <<one.txt 3<<two /dst/
1
one.txt
2
two
RUN echo "<<NOT" a<<notheredoc
