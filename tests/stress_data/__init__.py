"""Hard data for federated-vs-pooled tests, generated from the shared default-credit files.

``horizontal`` turns the homo files into non-IID, heavy-tailed banks; ``vertical`` turns the hetero
files into hard vertical splits. Nothing here is copied into the repository: every case is built at
test time from ``../shared/data`` (tests skip with a message when it is absent).
"""
