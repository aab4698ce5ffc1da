"""AWS EC2 on boto3: `compute.AwsCompute`, its price catalog and capacity errors."""
