#include <omp.h>
#include <stdio.h>

int main(void) {
    int sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (int i = 1; i <= 100; i++) sum += i;
    printf("C: OpenMP %d, sum %d\n", _OPENMP, sum);
    return sum == 5050 ? 0 : 1;
}
