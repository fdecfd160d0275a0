# ADD of local archives: unpacked with their owners into a new and an existing directory; what only
# looks like an archive is copied; COPY never unpacks.
FROM copy-base:2
ADD t.tar /x1/
ADD t.tar.gz /x2
ADD t.tar.bz2 /etc/
ADD t.tar.xz /x4/sub/
ADD fake.gz /x6/
ADD notreally.tar.gz /x7/
COPY t.tar /x9/
ADD deep.tar /x10/
ADD deep.tar /
ADD dot.tar /x11/
ADD dot.tar /etc/
ADD zeros.tar /x12/
ADD empty.tar.gz /x13/
ADD t.tar /x14
ADD fake.gz /x15
ADD --chmod=0600 t.tar /x16/
ADD implicit.tar /
ADD t.tar /lnkdir
ADD dot.tar /data/
