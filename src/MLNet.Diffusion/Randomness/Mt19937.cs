namespace MLNet.Diffusion.Randomness;

/// <summary>
/// The 32-bit Mersenne Twister (Matsumoto &amp; Nishimura 1998) as PyTorch's CPU generator runs it
/// (<c>aten/src/ATen/core/MT19937RNGEngine.h</c>): the standard initialisation from one 32-bit word, 624 words of
/// state regenerated at once, the standard tempering.
/// </summary>
internal sealed class Mt19937
{
    private const int N = 624;
    private const int M = 397;
    private const uint MatrixA = 0x9908B0DFu;
    private const uint UpperMask = 0x80000000u;
    private const uint LowerMask = 0x7FFFFFFFu;

    private readonly uint[] _state = new uint[N];
    private int _next;

    /// <summary>Seeds the engine with the low 32 bits of <paramref name="seed"/>, as <c>at::mt19937(uint64_t)</c> does.</summary>
    public Mt19937(ulong seed)
    {
        _state[0] = (uint)seed;
        for (int j = 1; j < N; j++)
            _state[j] = 1812433253u * (_state[j - 1] ^ (_state[j - 1] >> 30)) + (uint)j;
        _next = N;
    }

    /// <summary>The next 32-bit output.</summary>
    public uint NextUInt32()
    {
        if (_next == N)
            Twist();
        uint y = _state[_next++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C5680u;
        y ^= (y << 15) & 0xEFC60000u;
        y ^= y >> 18;
        return y;
    }

    /// <summary>Skips <paramref name="count"/> outputs, as that many <see cref="NextUInt32"/> calls would (tempering is skipped too).</summary>
    public void Discard(long count)
    {
        while (count > 0)
        {
            if (_next == N)
                Twist();
            int take = (int)System.Math.Min(count, N - _next);
            _next += take;
            count -= take;
        }
    }

    private void Twist()
    {
        var s = _state;
        int k = 0;
        for (; k < N - M; k++)
            s[k] = s[k + M] ^ Mix(s[k], s[k + 1]);
        for (; k < N - 1; k++)
            s[k] = s[k + M - N] ^ Mix(s[k], s[k + 1]);
        s[N - 1] = s[M - 1] ^ Mix(s[N - 1], s[0]);
        _next = 0;
    }

    private static uint Mix(uint upper, uint lower)
    {
        uint y = (upper & UpperMask) | (lower & LowerMask);
        return (y >> 1) ^ ((y & 1u) != 0 ? MatrixA : 0u);
    }
}
