module notls

go 1.19
