FROM -- scratch AS base
COPY -- foo /tmp/
ADD --link --	a.tar /opt/
RUN -- ["echo", "exec form"]
RUN --network=none -- echo shell form
COPY --"" bar /b/
COPY -- -- /c/
HEALTHCHECK --retries=2 -- CMD true
USER -- app
WORKDIR -- /w
ENV -- A=b
ONBUILD -- COPY -- x /x/
