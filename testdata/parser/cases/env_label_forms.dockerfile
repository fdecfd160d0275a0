FROM scratch
ENV LEGACY value with   spaces
ENV A=1 B="two words" C=three\ words D='$A'
LABEL "com.example.quoted"="x y" plain=z
LABEL legacy label value
ARG ONE TWO=2 THREE=
