/*  rng.h: splitmix64, the project's small seedable PRNG for non-sampling uses.

    Emulated jitter and loss, random test weights and similar need numbers
    that are identical on every platform for a given seed and cost nothing
    to set up; splitmix64 is that (Steele, Lea, Flood 2014). Token sampling
    has its own generator in sampler.c.
*/
#ifndef SPLITMESH_RNG_H
#define SPLITMESH_RNG_H

#include <math.h>
#include <stdint.h>

//  Next 64 random bits; advances *state.
static inline uint64_t
rng_next (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

//  Uniform in [0, 1) with 53 random bits.
static inline double
rng_uniform (uint64_t *state)
{
    return (double) (rng_next (state) >> 11) * (1.0 / 9007199254740992.0);
}

//  Standard normal (Box-Muller over two uniforms in (0, 1)).
static inline double
rng_normal (uint64_t *state)
{
    double u1 = ((double) (rng_next (state) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = ((double) (rng_next (state) >> 11) + 0.5) / 9007199254740992.0;
    return sqrt (-2.0 * log (u1)) * cos (6.283185307179586 * u2);
}

#endif
