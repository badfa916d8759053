/* The WAL's record framer (uringstack.wal.record): crc32c | length | lsn | payload | zero padding.
 *
 * us_wal_frame frames a whole batch of payloads (concatenated in `data`, their
 * lengths in `lens`) into the staging buffer with consecutive LSNs, so the
 * writer touches a batch, not a record.  The bytes are exactly those of
 * record.encode(): tests/wal/test_frame_native.py compares them.
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78, initial and final
 * inversion, as the crc32c package): the SSE4.2 instruction where the CPU has
 * it, else a table. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint32_t us_wal_table[8][256];
#if defined(__x86_64__)
static int us_wal_hw; /* the CPU has SSE4.2's crc32 instruction */
#endif

/* Filled once when the module is loaded, before any thread can call in. */
__attribute__((constructor)) static void us_wal_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        us_wal_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            us_wal_table[t][i] = (us_wal_table[t - 1][i] >> 8) ^ us_wal_table[0][us_wal_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    us_wal_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

/* crc is the raw (inverted) register; slicing-by-8 */
static uint32_t us_wal_crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= c;
        c = us_wal_table[7][w & 0xff] ^ us_wal_table[6][(w >> 8) & 0xff] ^ us_wal_table[5][(w >> 16) & 0xff] ^
            us_wal_table[4][(w >> 24) & 0xff] ^ us_wal_table[3][(w >> 32) & 0xff] ^
            us_wal_table[2][(w >> 40) & 0xff] ^ us_wal_table[1][(w >> 48) & 0xff] ^ us_wal_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ us_wal_table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t us_wal_crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

static uint32_t us_wal_crc_raw(uint32_t c, const uint8_t *p, size_t n)
{
#if defined(__x86_64__)
    if (us_wal_hw)
        return us_wal_crc_hw(c, p, n);
#endif
    return us_wal_crc_sw(c, p, n);
}

/* CRC32C of data, continuing from crc (0 to start), like crc32c.crc32c(data, crc). */
uint32_t us_wal_crc32c(uint32_t crc, const char *data, size_t len)
{
    return ~us_wal_crc_raw(~crc, (const uint8_t *)data, len);
}

/* The same through the table alone (what a CPU without SSE4.2 runs): for the tests. */
uint32_t us_wal_crc32c_table(uint32_t crc, const char *data, size_t len)
{
    return ~us_wal_crc_sw(~crc, (const uint8_t *)data, len);
}

/* Frame n records into buf (cap bytes) from offset at, LSNs lsn, lsn+1, ...; payload i is the
 * next lens[i] bytes of data.  Returns the offset after the last record (8-byte aligned padding
 * written as zeros), or -1 if the records do not fit in cap (nothing is promised about buf then). */
int64_t us_wal_frame(uint8_t *buf, size_t cap, size_t at, uint64_t lsn, const char *payloads,
                     const uint32_t *lens, size_t n)
{
    const uint8_t *data = (const uint8_t *)payloads;
    for (size_t i = 0; i < n; i++, lsn++) {
        uint32_t len = lens[i];
        size_t framed = (16 + (size_t)len + 7) & ~(size_t)7;
        if (at > cap || cap - at < framed)
            return -1;
        uint8_t *r = buf + at;
        uint32_t len_le = len;
        uint64_t lsn_le = lsn;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        len_le = __builtin_bswap32(len_le);
        lsn_le = __builtin_bswap64(lsn_le);
#endif
        memcpy(r + 4, &len_le, 4);
        memcpy(r + 8, &lsn_le, 8);
        memcpy(r + 16, data, len);
        memset(r + 16 + len, 0, framed - 16 - len);
        uint32_t crc = ~us_wal_crc_raw(~0u, r + 4, 12 + (size_t)len);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        crc = __builtin_bswap32(crc);
#endif
        memcpy(r, &crc, 4);
        data += len;
        at += framed;
    }
    return (int64_t)at;
}
