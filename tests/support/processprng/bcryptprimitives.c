/*
 * Test-only stand-in for bcryptprimitives.dll, which Debian's Wine 8 lacks. Rust's standard
 * library (1.78+) takes its random bytes (HashMap keys, rand's OS seed) from ProcessPrng in
 * bcryptprimitives.dll; without it pointsd.exe does not start under that Wine. This forwards
 * ProcessPrng to BCryptGenRandom with the system-preferred RNG, which Wine 8 has.
 *
 * Never shipped: real Windows (10 and later) has the DLL. tests/windows.rs builds it with
 * MinGW and copies it into the test Wine prefix's system32:
 *   x86_64-w64-mingw32-gcc -shared -s -o bcryptprimitives.dll bcryptprimitives.c \
 *     bcryptprimitives.def -lbcrypt
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* BCryptGenRandom takes a ULONG length: feed larger requests in pieces. */
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
