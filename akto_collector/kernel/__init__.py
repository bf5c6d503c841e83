"""The kernel side: the programs' loader (the only importer of bcc), the ring
buffer reader and the record layout they share with probes/common.h."""
