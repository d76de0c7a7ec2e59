#include <omp.h>
#include <cstdio>
#include <numeric>
#include <vector>

int main() {
    std::vector<int> v(100);
    std::iota(v.begin(), v.end(), 1);
    int sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (int i = 0; i < 100; i++) sum += v[i];
    std::printf("C++: OpenMP %d, sum %d\n", _OPENMP, sum);
    return sum == 5050 ? 0 : 1;
}
