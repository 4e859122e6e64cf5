/*
 * What a user would run instead of asap: Open MPI's MPI_Allreduce (sum) of a float
 * model, timed per round. Rank 0 prints one JSON line.
 *   mpirun -np 8 ./mpi_allreduce MODEL_FLOATS ROUNDS
 * Built and run by `cargo bench -p asap-cli --bench vs-mpi`.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 40;
    float *model = malloc(sizeof(float) * n);
    float *sum = malloc(sizeof(float) * n);
    if (!model || !sum) {
        fprintf(stderr, "out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (long k = 0; k < n; k++) model[k] = (float)((k * 7 + rank * 13) % 101) / 50.0f - 1.0f;
    /* One warm-up round: connections, buffers. */
    MPI_Allreduce(model, sum, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    double start = MPI_Wtime();
    for (int r = 0; r < rounds; r++) {
        MPI_Allreduce(model, sum, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        /* The average becomes the next round's model, as in training. */
        for (long k = 0; k < n; k++) model[k] = sum[k] / (float)world;
    }
    double took = MPI_Wtime() - start;
    if (rank == 0)
        printf("{\"processes\": %d, \"model_floats\": %ld, \"rounds\": %d, \"ms_per_round\": %.3f}\n",
               world, n, rounds, 1000.0 * took / rounds);
    free(model);
    free(sum);
    MPI_Finalize();
    return 0;
}
