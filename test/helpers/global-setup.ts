// Placeholder: replaced by the FerretDB / MONGODB_URI / testcontainers setup.
export default async function setup(): Promise<void> {}
