module goauthz

go 1.19
