# Destinations the image decides: symlinks to directories and to files, a dangling link, an
# existing file replaced, directories the image has keeping their owner and mode.
FROM copy-base:2
COPY a.txt /lnkdir
COPY b.txt /abslnkdir/
COPY a.txt /lnkfile
COPY a.txt /dangle
COPY a.txt /opt/new/deep/
COPY dir /lnkdir/sub/
COPY a.txt /lnkdir/new/deep/
COPY exec.sh /afile
WORKDIR /lnkdir/w
COPY a.txt rel
COPY a.txt /data/sub/
