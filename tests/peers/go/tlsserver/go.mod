module tlsserver

go 1.19
