# escape=`
FROM scratch
ENV A=`$HOME B=C:\path C="q`"uote"
WORKDIR C:\Users\$A
