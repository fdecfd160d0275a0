# check=skip=JSONArgsRecommended,MaintainerDeprecated
FROM scratch
MAINTAINER x
CMD run
COPY $MISSING /
