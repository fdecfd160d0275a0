FROM scratch
ENV A=old
ENV A=new B=$A
ENV C=${A}
