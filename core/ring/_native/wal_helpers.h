/* cffi cdef of the WAL's record framer (wal_helpers.c); parsed by cffi, not by a C compiler. */
uint32_t us_wal_crc32c(uint32_t crc, const char *data, size_t len);
uint32_t us_wal_crc32c_table(uint32_t crc, const char *data, size_t len);
int64_t us_wal_frame(uint8_t *buf, size_t cap, size_t at, uint64_t lsn, const char *data,
                     const uint32_t *lens, size_t n);
